// Detection target.
