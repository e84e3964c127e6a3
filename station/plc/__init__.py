"""The line PLC: register map, Modbus link, handshake, floor services wiring."""
