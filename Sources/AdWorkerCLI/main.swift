print("adworker")
