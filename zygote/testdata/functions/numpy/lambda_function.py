import numpy


def lambda_handler(event, context):
    return {"sum": int(numpy.sum(numpy.array(event["values"], dtype=numpy.int64)))}
