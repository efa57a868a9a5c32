import time


def lambda_handler(event, context):
    time.sleep(event.get("ms", 0) / 1000)
    return {"slept_ms": event.get("ms", 0)}
