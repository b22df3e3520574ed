"""Usage metering: model prices, usage events, daily rollups, statistics, storage GB-months."""
