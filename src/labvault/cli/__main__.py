from labvault.cli import entry

entry()
