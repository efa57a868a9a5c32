# A sibling module: imports from the function directory must work.
def word(name):
    return name
