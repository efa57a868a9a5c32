def f(event):
    return {"style": "openlambda", "echo": event}
