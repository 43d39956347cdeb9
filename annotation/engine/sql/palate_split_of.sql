CREATE OR REPLACE FUNCTION public.palate_split_of(p_annotator_key text, p_image_sha text)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    u float8;
BEGIN
    -- annotation.splits.split_assign on (Annotator.split_key, Image.sha256),
    -- from the keys themselves: the submit has both rows in hand already.
    u := palate_split_key_unit('annotator', p_annotator_key);
    IF u < 0.05::float8 THEN RETURN 'val_unseen'; END IF;
    IF u < 0.05::float8 + 0.10::float8 THEN RETURN 'test_unseen'; END IF;
    u := palate_split_key_unit('image', p_image_sha);
    IF u < 0.11::float8 THEN RETURN 'val_seen'; END IF;
    IF u < 0.11::float8 + 0.17::float8 THEN RETURN 'test_seen'; END IF;
    RETURN 'train';
END
$function$
