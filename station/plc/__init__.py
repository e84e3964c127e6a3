"""The line PLC: register map, Modbus link, handshake, plant services wiring."""
