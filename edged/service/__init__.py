"""The daemon: composes sources, preprocess, inference, decode and MQTT; reload, health, stats."""
