"""MQTT: the publisher, its network loop and settings, payloads and schemas,
discovery, `edged listen`.
"""
