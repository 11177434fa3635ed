"""Weights from and to other tools: torch files without torch, torchvision's layout, fine-tuning starts."""
