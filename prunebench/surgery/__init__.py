"""Model surgery: the dependency structure, plans resolved to masks, slimming, MAC counting."""
