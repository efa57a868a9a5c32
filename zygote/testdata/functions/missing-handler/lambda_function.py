# The module exists but has no lambda_handler.
def other(event, context):
    return event
