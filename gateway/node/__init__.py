"""gateway/node"""
