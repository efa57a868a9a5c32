# The smallest useful handler: no imports beyond what the runtime has.


def lambda_handler(event, context):
    return {"hello": event.get("name", "world")}
