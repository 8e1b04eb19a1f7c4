"""Models: the Llama decoder, the verifier, and HF checkpoint conversion."""
