"""The MLLP listener: a face beside ``api`` and ``cli``; TLS, pinned feed certificates, ACK after commit."""
