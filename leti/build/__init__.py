"""leti.build"""
