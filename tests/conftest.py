"""Every test runs with the backends installed in ``overlayd.subnet`` (their config parsers and
lease codecs), as ``overlayd``'s command line installs them before any command."""

from overlayd.backend.select import install

install()
