import greeting


def lambda_handler(event, context):
    name = event.get("name", "world")
    print("hello called for", name)
    return {"hello": greeting.word(name)}
