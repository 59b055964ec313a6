"""leti.compression"""
