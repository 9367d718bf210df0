"""The collector's HTTP shell under uvicorn: header and body limits, connection limits, the Host check."""
