"""Every test runs with the backends' lease codecs installed in ``overlayd.subnet``, as
``overlayd``'s command line installs them before any command."""

from overlayd.backend.select import install

install()
