"""What the tests share: shrunk specs, fake logits, process helpers, W&B records."""
