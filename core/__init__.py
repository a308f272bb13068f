"""The bottom package: the one typed event vocabulary and the shared literals every package
speaks. It imports pydantic only, so that speech/, dialogue/, campaigns/ and assist/ can all
depend on it and on nothing of each other's."""
