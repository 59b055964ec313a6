"""leti.predictors"""
