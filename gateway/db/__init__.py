"""gateway/db"""
