# version BINARY: what BINARY -V says (see version_of).
version_of "$1"
