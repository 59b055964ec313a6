"""Test helpers that ship with leti (the loopback ADB device). Product code never imports them."""
