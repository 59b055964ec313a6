"""leti.graph"""
