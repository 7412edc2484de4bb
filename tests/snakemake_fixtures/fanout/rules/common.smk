PREFIX = config.get("prefix", "fanout")
