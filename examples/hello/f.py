# An OpenLambda-style handler: f.py defining f(event). sockfaas picks this
# convention when the code has f.py and no lambda_function.py.


def f(event):
    name = "world"
    if isinstance(event, dict):
        name = event.get("name") or name
    print("greeting", name)  # handler output: see `sockfaas logs hello`
    return {"greeting": "Hello, %s!" % name}
