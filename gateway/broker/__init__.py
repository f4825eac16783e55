"""gateway/broker"""
