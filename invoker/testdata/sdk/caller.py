import time
import sockfaas

def lambda_handler(event, context):
    op = event.get("op", "call")
    if op == "async":
        return {"id": sockfaas.invoke_async(event["to"], event.get("event"))}
    if op == "bench":
        lat = []
        for _ in range(event["n"]):
            t = time.perf_counter_ns()
            sockfaas.invoke(event["to"], {})
            lat.append(time.perf_counter_ns() - t)
        return lat
    if op == "uncaught":
        return sockfaas.invoke(event["to"], event.get("event"))
    payload = event.get("event")
    if op == "big":
        payload = {"x": "y" * (6 * 1024 * 1024 + 1)}
    t = time.monotonic()
    try:
        return {"result": sockfaas.invoke(event["to"], payload)}
    except sockfaas.FunctionError as e:
        return {"function_error": {"type": e.error_type, "message": e.error_message, "stack": e.stack_trace}}
    except sockfaas.InvokeError as e:
        return {"invoke_error": {"kind": e.kind, "message": str(e)}, "elapsed": time.monotonic() - t}
