def lambda_handler(event, context):
    return {"echo": event, "rid": context.aws_request_id, "remaining": context.get_remaining_time_in_millis()}
