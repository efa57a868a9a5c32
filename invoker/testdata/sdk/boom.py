def lambda_handler(event, context):
    raise ValueError("boom: " + str(event.get("why")))
