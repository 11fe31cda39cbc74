"""The chat's own vocabulary, below every app: events and their notices, refusals, request
parsing. It imports no first-party package, so `matching`, `dialogs` and the project package
above them can all speak it."""
