"""Data: dataset layouts, the feature cache and crops; corpora from TTS engines and from recordings."""
