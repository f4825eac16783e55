"""Firmware updates on chain (docs/OTA.md): the FIRMWARE transaction (25)
records each release and each device's installed version."""
