"""Local devnet launcher (validator processes, fleet simulator) and container files."""
