import time

def lambda_handler(event, context):
    time.sleep(event.get("sec", 5))
    return "woke"
