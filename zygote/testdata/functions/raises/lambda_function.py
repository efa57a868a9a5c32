def check(event):
    raise ValueError("bad value: %s" % event.get("v"))


def lambda_handler(event, context):
    if event.get("unserializable"):
        return {"set": {1, 2}}
    check(event)
