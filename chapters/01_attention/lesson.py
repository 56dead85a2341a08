# %% [markdown]
# # Attention
# $x^2$

# %%
import tfcourse
print(tfcourse.__version__)
