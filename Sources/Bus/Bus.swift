// Bus target.
