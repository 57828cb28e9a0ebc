"""Zero-shot detection from text prompts: CLIP's two towers, prompt learning, the glocal loss, WinCLIP's
prompt ensemble and windows. The detectors that wire them are in ``lineguard.methods``."""
