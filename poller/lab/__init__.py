"""What runs without Twilio: the simulator, the receiver, the demo, test-sink and samples."""
