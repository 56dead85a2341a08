# %% [markdown]
# # Exercises

# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax(x):
    ### BEGIN SOLUTION
    return x.exp() / x.exp().sum(-1, keepdim=True)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "softmax_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
import torch
assert softmax(torch.zeros(3)).sum() == 1
### BEGIN HIDDEN TESTS
assert softmax(torch.zeros(4)).sum() == 1
### END HIDDEN TESTS
