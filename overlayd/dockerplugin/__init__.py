"""The Docker network plugin: libnetwork's remote NetworkDriver and IpamDriver on a unix socket."""
