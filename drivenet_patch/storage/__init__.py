"""Files written safely: atomic writes and tensor files (safetensors + JSON, never pickle)."""
