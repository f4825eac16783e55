"""gateway/identity"""
