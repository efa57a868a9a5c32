def f(event):
    return {"echo": event}
