"""What the tests share: clients, events, live servers, rows; see tests/README.md."""
