"""edged: on-device inference daemon (camera -> quantized TFLite -> MQTT)."""

__version__ = "0.1.0"
