"""Line integration: stored inspections, camera states and alarms offered to PLCs, SCADA and MES
systems that subscribe instead of polling: an MQTT publisher (:mod:`app.line.mqtt`) and an OPC UA
server (:mod:`app.line.opcua`). Both are optional extras; docs/integration.md describes the topics,
payloads and node ids."""
