"""leti.service"""
